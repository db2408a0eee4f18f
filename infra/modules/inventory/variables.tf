variable "hosts" {
  description = "Every host of the stack: name -> { private_address, role = \"services\" | \"worker\" }. Exactly one services host (the gateway)."
  type = map(object({
    private_address = string
    role            = string
  }))

  validation {
    condition     = alltrue([for host in values(var.hosts) : contains(["services", "worker"], host.role)])
    error_message = "Each host's role must be \"services\" or \"worker\"."
  }

  validation {
    condition     = length([for host in values(var.hosts) : host if host.role == "services"]) == 1
    error_message = "hosts must hold exactly one host with role \"services\" (the gateway and Ray head)."
  }
}

variable "gateway_address" {
  description = "Address Ansible reaches the services host at (its floating IP); every other host is reached through it."
  type        = string

  validation {
    condition     = length(trimspace(var.gateway_address)) > 0
    error_message = "gateway_address must be the gateway's (floating) address."
  }
}

variable "ssh_user" {
  description = "Login user on every host."
  type        = string
  default     = "cc"
}

variable "ssh_private_key_file" {
  description = "Path of the stack's private key (.stack/<name>/secrets/ssh_key)."
  type        = string

  validation {
    condition     = length(trimspace(var.ssh_private_key_file)) > 0
    error_message = "ssh_private_key_file must be the path of the stack's private key."
  }
}

variable "known_hosts_file" {
  description = "Path of the stack's known_hosts, where host keys are pinned at first contact (.stack/<name>/known_hosts)."
  type        = string

  validation {
    condition     = length(trimspace(var.known_hosts_file)) > 0
    error_message = "known_hosts_file must be the path of the stack's pinned known_hosts."
  }
}
