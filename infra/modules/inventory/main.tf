locals {
  gateway_name = one([for name, host in var.hosts : name if host.role == "services"])
  worker_names = sort([for name, host in var.hosts : name if host.role == "worker"])

  # Host keys are checked against the stack's own pinned file, never switched off.
  pinned_host_keys = "-o UserKnownHostsFile=${var.known_hosts_file} -o StrictHostKeyChecking=yes"

  # Every host but the gateway is reached through it. ProxyCommand rather than ProxyJump: the
  # jump hop must get the same key and known_hosts options.
  through_gateway = join(" ", [
    "-o ProxyCommand=\"ssh -W %h:%p -q -i ${var.ssh_private_key_file} ${local.pinned_host_keys} ${var.ssh_user}@${var.gateway_address}\"",
    local.pinned_host_keys,
  ])

  inventory_hosts = {
    for name, host in var.hosts : name => {
      ansible_host            = name == local.gateway_name ? var.gateway_address : host.private_address
      stack_private_address   = host.private_address
      ansible_ssh_common_args = name == local.gateway_name ? local.pinned_host_keys : local.through_gateway
    }
  }
}
