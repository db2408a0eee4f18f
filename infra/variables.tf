variable "stack_name" {
  description = "Name of the stack: prefix of every resource's name and the tag on each of them."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,30}$", var.stack_name))
    error_message = "stack_name must start with a lowercase letter and hold only a-z, 0-9 and '-', at most 31 characters."
  }
}

variable "cloud" {
  description = "Entry in clouds.yaml holding the application credential for var.site."
  type        = string

  validation {
    condition     = length(trimspace(var.cloud)) > 0
    error_message = "cloud must name an entry of clouds.yaml (e.g. \"chameleon-kvm-tacc\")."
  }
}

variable "site" {
  description = "Chameleon site: KVM@TACC (virtual machines) or a bare-metal site, CHI@TACC or CHI@UC."
  type        = string

  validation {
    condition     = contains(keys(local.site_layouts), var.site)
    error_message = "site must be one of ${join(", ", [for site in keys(local.site_layouts) : jsonencode(site)])}."
  }
}

variable "gpu_count" {
  description = "Number of GPU worker nodes (Ray workers), all from the GPU reservation."
  type        = number

  validation {
    condition     = var.gpu_count >= 1 && floor(var.gpu_count) == var.gpu_count
    error_message = "gpu_count must be a whole number of GPU nodes, at least 1."
  }
}

variable "gpu_reservation_id" {
  description = "Id of the GPU reservation inside the lease (flavor:instance on KVM, physical:host on bare metal); never the lease id."
  type        = string

  validation {
    condition     = can(regex(local.uuid_pattern, var.gpu_reservation_id))
    error_message = "gpu_reservation_id must be the uuid of the GPU reservation inside the lease (the lease's reservations[].id), not the lease id."
  }
}

variable "services_reservation_id" {
  description = "Id of the services node's reservation inside the lease; never the lease id."
  type        = string

  validation {
    condition     = can(regex(local.uuid_pattern, var.services_reservation_id))
    error_message = "services_reservation_id must be the uuid of the services reservation inside the lease (the lease's reservations[].id), not the lease id."
  }
}

variable "floating_ip_address" {
  description = "Bare metal: the lease's reserved floating IP (Blazar creates and deletes it; Terraform only associates it with the gateway). KVM: empty (one is allocated here)."
  type        = string
  default     = ""

  validation {
    condition     = var.floating_ip_address == "" || can(cidrnetmask("${var.floating_ip_address}/32"))
    error_message = "floating_ip_address must be an IPv4 address (the floating IP reserved in the lease)."
  }

  validation {
    condition     = (var.floating_ip_address == "") == (lookup(local.site_layouts, var.site, "") == "kvm")
    error_message = "floating_ip_address is the bare-metal lease's reserved floating IP; on KVM leave it empty (a floating IP is allocated from public)."
  }
}

variable "reservations_active" {
  description = "Whether the lease is ACTIVE. false (make down once it ended or was deleted): nothing the lease's end deleted is looked up (the reserved flavor, the reserved floating IP)."
  type        = bool
  default     = true
}

variable "image" {
  description = "Image of every host (its login user is cc)."
  type        = string
  default     = "CC-Ubuntu24.04-CUDA"
}

variable "network_name" {
  description = "Network the hosts' ports are on (shared by every project of the site)."
  type        = string
  default     = "sharednet1"
}

variable "ssh_allowed_cidr" {
  description = "IPv4 CIDR allowed to reach the gateway's SSH port (KVM's security group), e.g. your address/32."
  type        = string

  validation {
    condition     = can(cidrnetmask(var.ssh_allowed_cidr))
    error_message = "ssh_allowed_cidr must be an IPv4 CIDR such as \"203.0.113.7/32\"."
  }

  validation {
    condition     = !can(cidrnetmask(var.ssh_allowed_cidr)) || cidrnetmask(var.ssh_allowed_cidr) != "0.0.0.0" || var.allow_ssh_from_anywhere
    error_message = "ssh_allowed_cidr opens SSH to the whole Internet: give your own address (e.g. \"203.0.113.7/32\") or set allow_ssh_from_anywhere = true."
  }
}

variable "allow_ssh_from_anywhere" {
  description = "Set to true to accept a /0 ssh_allowed_cidr (SSH open to the whole Internet)."
  type        = bool
  default     = false
}

variable "public_key" {
  description = "OpenSSH public key generated for the stack; a key pair named <stack_name>-key is made from it. Empty when key_pair_name is given."
  type        = string
  default     = ""

  validation {
    condition     = var.public_key == "" || can(regex("^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/=]+( .*)?$", trimspace(var.public_key)))
    error_message = "public_key must be one OpenSSH public key line (ssh-ed25519 AAAA...), never a private key."
  }

  validation {
    condition     = (var.public_key == "") != (var.key_pair_name == "")
    error_message = "Set exactly one of public_key (the stack's generated key) and key_pair_name (an existing key pair)."
  }
}

variable "key_pair_name" {
  description = "Existing key pair on the site to use instead of public_key. Empty when public_key is given."
  type        = string
  default     = ""
}

variable "data_volume_id" {
  description = "Cinder volume for the services host's data, made by infra/volume (its own state); attached on KVM only. Empty: none."
  type        = string
  default     = ""

  validation {
    condition     = var.data_volume_id == "" || can(regex(local.uuid_pattern, var.data_volume_id))
    error_message = "data_volume_id must be the uuid of the volume made by infra/volume (its volume_id output), or empty."
  }

  validation {
    condition     = var.data_volume_id == "" || lookup(local.site_layouts, var.site, "") == "kvm"
    error_message = "data_volume_id is for KVM sites only: bare-metal sites have no Cinder volumes, leave it empty."
  }
}
