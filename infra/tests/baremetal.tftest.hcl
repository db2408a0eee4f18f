# CHI@UC: whole machines chosen by the reservation hint; no security groups, no Cinder.

mock_provider "openstack" {
  mock_resource "openstack_networking_port_v2" {
    defaults = {
      all_fixed_ips = ["10.140.81.5"]
    }
  }
}

variables {
  stack_name              = "metal"
  cloud                   = "chameleon-chi-uc"
  site                    = "CHI@UC"
  gpu_count               = 1
  gpu_reservation_id      = "11111111-2222-3333-4444-555555555555"
  services_reservation_id = "66666666-7777-8888-9999-000000000000"
  floating_ip_address     = "192.5.87.31"
  ssh_allowed_cidr        = "198.51.100.0/24"
  public_key              = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGZha2VrZXlmb3J0ZXN0c29ubHk metal@stack"
}

run "instances_carry_the_reservation_hint" {
  assert {
    condition     = output.layout == "baremetal"
    error_message = "CHI@UC is the baremetal layout."
  }

  assert {
    condition     = one(openstack_compute_instance_v2.this["metal-gpu-1"].scheduler_hints).additional_properties == tomap({ reservation = var.gpu_reservation_id })
    error_message = "The GPU node is scheduled by the GPU reservation's id."
  }

  assert {
    condition     = one(openstack_compute_instance_v2.this["metal-services"].scheduler_hints).additional_properties == tomap({ reservation = var.services_reservation_id })
    error_message = "The services node is scheduled by the services reservation's id."
  }

  assert {
    condition     = alltrue([for instance in values(openstack_compute_instance_v2.this) : instance.flavor_name == "baremetal"])
    error_message = "Bare-metal instances use the baremetal flavor."
  }

  assert {
    condition     = length(data.openstack_compute_flavor_v2.reserved) == 0
    error_message = "No reserved flavor is looked up on bare metal."
  }
}

run "the_reserved_floating_ip_is_looked_up_while_the_lease_is_active" {
  assert {
    condition     = data.openstack_networking_floatingip_v2.gateway[0].address == var.floating_ip_address && length(openstack_networking_floatingip_v2.gateway) == 0
    error_message = "Bare metal looks the lease's reserved floating IP up by its address and allocates none."
  }

  assert {
    condition     = openstack_networking_floatingip_associate_v2.gateway[0].floating_ip == var.floating_ip_address && output.gateway_address == var.floating_ip_address
    error_message = "The reserved floating IP is associated and is the gateway address."
  }
}

run "a_lease_that_ended_reads_nothing_it_took_along" {
  command = plan

  variables {
    reservations_active = false
  }

  assert {
    condition     = length(data.openstack_networking_floatingip_v2.gateway) == 0 && length(openstack_networking_floatingip_associate_v2.gateway) == 0
    error_message = "Once the lease ended, its reserved floating IP (deleted with it) is neither looked up nor associated."
  }
}

run "no_security_group_on_bare_metal" {
  assert {
    condition     = length(openstack_networking_secgroup_v2.this) == 0 && length(openstack_networking_secgroup_rule_v2.ssh) == 0 && length(openstack_networking_secgroup_rule_v2.stack_internal) == 0
    error_message = "Bare metal enforces no security groups, so none is made."
  }

  assert {
    condition     = alltrue([for port in values(openstack_networking_port_v2.this) : length(port.security_group_ids) == 0])
    error_message = "Ports carry no group on bare metal."
  }
}

run "floating_ip_goes_to_the_gateway_port" {
  assert {
    condition     = openstack_networking_floatingip_associate_v2.gateway[0].port_id == openstack_networking_port_v2.this["metal-services"].id
    error_message = "The floating IP is associated with the services host's port."
  }

  assert {
    condition     = length(openstack_compute_volume_attach_v2.data) == 0
    error_message = "Bare metal attaches no Cinder volume."
  }

  assert {
    condition     = [for name, host in output.hosts : name if host.role == "worker"] == ["metal-gpu-1"]
    error_message = "The hosts output names the GPU node as the (Ray) worker."
  }
}

run "a_data_volume_is_refused_on_bare_metal" {
  command = plan

  variables {
    data_volume_id = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
  }

  expect_failures = [var.data_volume_id]
}
