data "openstack_networking_network_v2" "this" {
  name = var.network_name
}

# One port per host: the instance attaches by port, the security group sits on the port, and
# the floating IP is associated with the gateway's port.
resource "openstack_networking_port_v2" "this" {
  for_each = local.hosts

  name               = "${each.key}-port"
  network_id         = data.openstack_networking_network_v2.this.id
  admin_state_up     = true
  security_group_ids = local.is_kvm ? [openstack_networking_secgroup_v2.this[0].id] : []
  tags               = [local.stack_tag, "role=${each.value.role}"]
}

# Bare metal: the lease's reserved floating IP. Blazar creates it at lease start and deletes it
# at the end, so it is looked up, never managed here; once the lease is over it is not looked
# up at all (var.reservations_active), or `make down` would fail on what is gone.
data "openstack_networking_floatingip_v2" "gateway" {
  count = !local.is_kvm && var.reservations_active ? 1 : 0

  address = var.floating_ip_address
}

# KVM@TACC: Chameleon documents allocating a floating IP from `public` there, not reserving one
# (ChameleonCloud/docs source/technical/kvm/kvm_gui.rst). Made here and released by `make down`.
resource "openstack_networking_floatingip_v2" "gateway" {
  count = local.is_kvm ? 1 : 0

  pool        = "public"
  description = "${var.stack_name}: the gateway of stack ${var.stack_name}"
  tags        = [local.stack_tag]
}

resource "openstack_networking_floatingip_associate_v2" "gateway" {
  count = local.is_kvm || var.reservations_active ? 1 : 0

  floating_ip = local.gateway_address
  port_id     = openstack_networking_port_v2.this[local.gateway_name].id
}
