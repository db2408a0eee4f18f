# The compute half of a stack on Chameleon: the services/Ray-head host (the SSH gateway, with
# the lease's floating IP) and var.gpu_count GPU workers, all from the lease's reservations.
# The lease itself is python-chi's job (Terraform has no Blazar resource); the data volume lives
# in infra/volume, a state of its own, so destroying this one keeps the data.

locals {
  # KVM sites give VMs from reserved flavors and enforce security groups; CHI@* give whole
  # machines, scheduled by a reservation hint, with every port open (no security groups).
  site_layouts = {
    "KVM@TACC" = "kvm"
    "CHI@TACC" = "baremetal"
    "CHI@UC"   = "baremetal"
  }
  layout = local.site_layouts[var.site]
  is_kvm = local.layout == "kvm"

  ssh_user     = "cc"                                                             # login user of every CC-* image
  uuid_pattern = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$" # OpenStack ids
  gateway_name = "${var.stack_name}-services"

  hosts = merge(
    {
      (local.gateway_name) = { role = "services", reservation_id = var.services_reservation_id }
    },
    {
      for index in range(var.gpu_count) :
      "${var.stack_name}-gpu-${index + 1}" => { role = "worker", reservation_id = var.gpu_reservation_id }
    },
  )

  # What every resource carries so a stack's leftovers can be found by name.
  stack_tag = "stack=${var.stack_name}"

  ssh_private_key_file = var.ssh_private_key_file != "" ? var.ssh_private_key_file : abspath("${path.module}/../.stack/${var.stack_name}/secrets/ssh_key")
  known_hosts_file     = var.known_hosts_file != "" ? var.known_hosts_file : abspath("${path.module}/../.stack/${var.stack_name}/known_hosts")
}

module "inventory" {
  source = "./modules/inventory"

  hosts = {
    for name, port in openstack_networking_port_v2.this :
    name => { private_address = port.all_fixed_ips[0], role = local.hosts[name].role }
  }
  gateway_address      = data.openstack_networking_floatingip_v2.gateway.address
  ssh_user             = local.ssh_user
  ssh_private_key_file = local.ssh_private_key_file
  known_hosts_file     = local.known_hosts_file
}
