output "yaml" {
  description = "The Ansible inventory: groups services, ray_head (the services host) and ray_workers; the gateway direct, the others through it."
  value = templatefile("${path.module}/inventory.yaml.tftpl", {
    ssh_user             = var.ssh_user
    ssh_private_key_file = var.ssh_private_key_file
    private_addresses    = sort([for host in values(var.hosts) : host.private_address])
    gateway_name         = local.gateway_name
    worker_names         = local.worker_names
    hosts                = local.inventory_hosts
  })
}

output "hosts" {
  description = "The hosts as given: name -> { private_address, role }."
  value       = var.hosts
}
