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

  # Where SSH comes in: KVM's allocated floating IP, or bare metal's reserved one.
  gateway_address = local.is_kvm ? openstack_networking_floatingip_v2.gateway[0].address : var.floating_ip_address
}
