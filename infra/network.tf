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

# The lease's reserved floating IP: Blazar creates it at lease start and deletes it at the end,
# so it is looked up, never managed here.
data "openstack_networking_floatingip_v2" "gateway" {
  address = var.floating_ip_address
}

resource "openstack_networking_floatingip_associate_v2" "gateway" {
  floating_ip = data.openstack_networking_floatingip_v2.gateway.address
  port_id     = openstack_networking_port_v2.this[local.gateway_name].id
}
