output "gateway_address" {
  description = "The gateway's floating IP (KVM: allocated here; bare metal: the lease's), on the services/Ray-head host: the one SSH entry to the stack."
  value       = local.gateway_address
}

output "ssh_user" {
  description = "Login user on every host."
  value       = local.ssh_user
}

output "layout" {
  description = "\"kvm\" (VMs, security groups, Cinder) or \"baremetal\" (whole machines, no security groups)."
  value       = local.layout
}

output "hosts" {
  description = "Every host: name -> { private_address, role = \"services\" | \"worker\" }. The stack CLI renders the Ansible inventory from it."
  value = {
    for name, port in openstack_networking_port_v2.this :
    name => { private_address = port.all_fixed_ips[0], role = local.hosts[name].role }
  }
}
