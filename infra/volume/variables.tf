variable "stack_name" {
  description = "Name of the stack: the volume is <stack_name>-data, tagged with it."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,30}$", var.stack_name))
    error_message = "stack_name must start with a lowercase letter and hold only a-z, 0-9 and '-', at most 31 characters."
  }
}

variable "cloud" {
  description = "Entry in clouds.yaml holding the application credential of the KVM site (bare-metal sites have no Cinder)."
  type        = string

  validation {
    condition     = length(trimspace(var.cloud)) > 0
    error_message = "cloud must name an entry of clouds.yaml (e.g. \"chameleon-kvm-tacc\")."
  }
}

variable "size_gb" {
  description = "Size of the data volume in GiB (PostgreSQL and the object store of the services host)."
  type        = number
  default     = 100

  validation {
    condition     = var.size_gb >= 1 && var.size_gb <= 2000 && floor(var.size_gb) == var.size_gb
    error_message = "size_gb must be a whole number of GiB between 1 and 2000."
  }
}

variable "volume_type" {
  description = "Cinder volume type on Chameleon's KVM sites."
  type        = string
  default     = "ceph-ssd"

  validation {
    condition     = contains(["ceph-ssd", "ceph-hdd"], var.volume_type)
    error_message = "volume_type must be \"ceph-ssd\" or \"ceph-hdd\"."
  }
}
