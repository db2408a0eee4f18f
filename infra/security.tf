# KVM only: bare-metal sites do not enforce security groups (the host firewall the Ansible roles
# install is the only wall there). Inbound: SSH from var.ssh_allowed_cidr, and everything between
# the stack's own ports; nothing else. Outbound stays open (apt, pip, model and data downloads).

resource "openstack_networking_secgroup_v2" "this" {
  count = local.is_kvm ? 1 : 0

  name        = "${var.stack_name}-hosts"
  description = "Stack ${var.stack_name}: SSH from ${var.ssh_allowed_cidr}, all traffic between the stack's hosts"
  # Neutron's default rules are replaced by the explicit ones below.
  delete_default_rules = true
  tags                 = [local.stack_tag]
}

resource "openstack_networking_secgroup_rule_v2" "ssh" {
  count = local.is_kvm ? 1 : 0

  description       = "SSH to the stack from ${var.ssh_allowed_cidr}"
  direction         = "ingress"
  ethertype         = "IPv4"
  protocol          = "tcp"
  port_range_min    = 22
  port_range_max    = 22
  remote_ip_prefix  = cidrsubnet(var.ssh_allowed_cidr, 0, 0) # normalised: 203.0.113.7/24 -> 203.0.113.0/24
  security_group_id = openstack_networking_secgroup_v2.this[0].id
}

resource "openstack_networking_secgroup_rule_v2" "stack_internal" {
  count = local.is_kvm ? 1 : 0

  description       = "All traffic between the stack's own ports"
  direction         = "ingress"
  ethertype         = "IPv4"
  remote_group_id   = openstack_networking_secgroup_v2.this[0].id
  security_group_id = openstack_networking_secgroup_v2.this[0].id
}

resource "openstack_networking_secgroup_rule_v2" "egress" {
  count = local.is_kvm ? 1 : 0

  description       = "Outbound to anywhere (packages, downloads)"
  direction         = "egress"
  ethertype         = "IPv4"
  remote_ip_prefix  = "0.0.0.0/0"
  security_group_id = openstack_networking_secgroup_v2.this[0].id
}
