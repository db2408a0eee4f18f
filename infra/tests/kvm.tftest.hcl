# KVM@TACC: reserved flavors, the security group, the data volume. The provider is mocked (its
# real schema, from the binary built by infra/build-provider.sh); nothing is contacted.

mock_provider "openstack" {
  mock_resource "openstack_networking_port_v2" {
    defaults = {
      all_fixed_ips = ["10.52.0.10"]
    }
  }

  # A computed attribute the configuration leaves unset gets this value: a rule showing it was
  # given no address range.
  # The floating IP Neutron allocates from `public`.
  mock_resource "openstack_networking_floatingip_v2" {
    defaults = {
      address = "129.114.108.20"
    }
  }

  mock_resource "openstack_networking_secgroup_rule_v2" {
    defaults = {
      remote_ip_prefix = "unset-in-config"
    }
  }
}

variables {
  stack_name              = "demo"
  cloud                   = "chameleon-kvm-tacc"
  site                    = "KVM@TACC"
  gpu_count               = 2
  gpu_reservation_id      = "11111111-2222-3333-4444-555555555555"
  services_reservation_id = "66666666-7777-8888-9999-000000000000"
  ssh_allowed_cidr        = "203.0.113.7/32"
  public_key              = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGZha2VrZXlmb3J0ZXN0c29ubHk demo@stack"
  data_volume_id          = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
}

run "gpu_and_services_hosts_use_their_reserved_flavors" {
  assert {
    condition     = output.layout == "kvm"
    error_message = "KVM@TACC is the kvm layout."
  }

  assert {
    condition     = data.openstack_compute_flavor_v2.reserved[var.gpu_reservation_id].name == "reservation:${var.gpu_reservation_id}"
    error_message = "The GPU flavor is looked up as reservation:<GPU reservation id>."
  }

  assert {
    condition = alltrue([
      for name in ["demo-gpu-1", "demo-gpu-2"] :
      openstack_compute_instance_v2.this[name].flavor_id == data.openstack_compute_flavor_v2.reserved[var.gpu_reservation_id].id
    ])
    error_message = "Each GPU instance takes the GPU reservation's flavor."
  }

  assert {
    condition     = openstack_compute_instance_v2.this["demo-services"].flavor_id == data.openstack_compute_flavor_v2.reserved[var.services_reservation_id].id
    error_message = "The services instance takes the services reservation's flavor."
  }

  assert {
    condition     = alltrue([for instance in values(openstack_compute_instance_v2.this) : length(instance.scheduler_hints) == 0])
    error_message = "KVM instances carry no bare-metal scheduler hint."
  }

  assert {
    condition     = length(openstack_compute_instance_v2.this) == 3 && output.hosts["demo-services"].role == "services" && output.hosts["demo-gpu-2"].role == "worker"
    error_message = "One services host and gpu_count workers."
  }

  assert {
    condition     = alltrue([for instance in values(openstack_compute_instance_v2.this) : instance.image_name == "CC-Ubuntu24.04-CUDA" && instance.key_pair == "demo-key"])
    error_message = "Every host boots the CUDA image with the stack's key pair."
  }

  assert {
    condition     = alltrue([for name, instance in openstack_compute_instance_v2.this : instance.network[0].port == openstack_networking_port_v2.this[name].id])
    error_message = "Each instance is attached by its own port."
  }
}

run "floating_ip_is_allocated_from_public_and_goes_to_the_gateway_port" {
  assert {
    condition     = openstack_networking_floatingip_associate_v2.gateway[0].port_id == openstack_networking_port_v2.this["demo-services"].id
    error_message = "The floating IP is associated with the services host's port."
  }

  assert {
    condition     = openstack_networking_floatingip_v2.gateway[0].pool == "public" && contains(openstack_networking_floatingip_v2.gateway[0].tags, "stack=demo")
    error_message = "KVM allocates the gateway's floating IP from public, tagged with the stack."
  }

  assert {
    condition     = openstack_networking_floatingip_associate_v2.gateway[0].floating_ip == "129.114.108.20" && output.gateway_address == "129.114.108.20"
    error_message = "The allocated floating IP is the one associated and the gateway address."
  }

  assert {
    condition     = length(data.openstack_networking_floatingip_v2.gateway) == 0
    error_message = "KVM reserves no floating IP, so none is looked up."
  }
}

run "a_lease_that_ended_reads_nothing_it_took_along" {
  command = plan

  variables {
    reservations_active = false
  }

  assert {
    condition     = length(data.openstack_compute_flavor_v2.reserved) == 0
    error_message = "Once the lease ended, its reserved flavors (deleted with it) are not looked up."
  }

  assert {
    condition     = length(openstack_networking_floatingip_v2.gateway) == 1
    error_message = "The stack's own floating IP stays under Terraform, so `make down` releases it."
  }
}

run "security_rules_are_ssh_from_the_allowed_cidr_and_the_stack_itself" {
  assert {
    condition     = openstack_networking_secgroup_v2.this[0].name == "demo-hosts" && openstack_networking_secgroup_v2.this[0].delete_default_rules
    error_message = "One group per stack, without Neutron's default rules."
  }

  assert {
    condition = (openstack_networking_secgroup_rule_v2.ssh[0].direction == "ingress" &&
      openstack_networking_secgroup_rule_v2.ssh[0].protocol == "tcp" &&
      openstack_networking_secgroup_rule_v2.ssh[0].port_range_min == 22 &&
      openstack_networking_secgroup_rule_v2.ssh[0].port_range_max == 22 &&
    openstack_networking_secgroup_rule_v2.ssh[0].remote_ip_prefix == "203.0.113.7/32")
    error_message = "SSH (tcp/22) from ssh_allowed_cidr only."
  }

  assert {
    condition = (openstack_networking_secgroup_rule_v2.stack_internal[0].direction == "ingress" &&
      openstack_networking_secgroup_rule_v2.stack_internal[0].remote_group_id == openstack_networking_secgroup_v2.this[0].id &&
    openstack_networking_secgroup_rule_v2.stack_internal[0].remote_ip_prefix == "unset-in-config")
    error_message = "The other inbound rule admits the stack's own group, from no address range."
  }

  assert {
    condition     = openstack_networking_secgroup_rule_v2.egress[0].direction == "egress"
    error_message = "The only other rule is outbound."
  }

  assert {
    condition     = alltrue([for port in values(openstack_networking_port_v2.this) : port.security_group_ids == toset([openstack_networking_secgroup_v2.this[0].id])])
    error_message = "Every port carries the stack's group, and only it."
  }
}

run "data_volume_is_attached_to_the_services_host" {
  assert {
    condition     = openstack_compute_volume_attach_v2.data[0].volume_id == var.data_volume_id
    error_message = "The attachment uses data_volume_id."
  }

  assert {
    condition     = openstack_compute_volume_attach_v2.data[0].instance_id == openstack_compute_instance_v2.this["demo-services"].id
    error_message = "The data volume goes to the services host."
  }
}

run "everything_is_named_and_tagged_with_the_stack" {
  assert {
    condition     = alltrue([for name, port in openstack_networking_port_v2.this : startswith(port.name, "demo-") && contains(port.tags, "stack=demo")])
    error_message = "Ports are named and tagged with the stack."
  }

  assert {
    condition     = alltrue([for instance in values(openstack_compute_instance_v2.this) : startswith(instance.name, "demo-") && instance.metadata.stack == "demo" && contains(instance.tags, "stack=demo")])
    error_message = "Instances are named, tagged and labelled with the stack."
  }

  assert {
    condition     = output.hosts["demo-services"].private_address == "10.52.0.10" && output.gateway_address == "129.114.108.20"
    error_message = "The hosts output gives each host's private address; the gateway is reached at the floating IP."
  }
}

run "a_new_lease_replaces_the_instances" {
  variables {
    gpu_reservation_id = "99999999-2222-3333-4444-555555555555"
  }

  assert {
    condition     = terraform_data.reservation["demo-gpu-1"].input == "99999999-2222-3333-4444-555555555555"
    error_message = "The replacement trigger follows the reservation."
  }

  assert {
    condition     = openstack_compute_instance_v2.this["demo-gpu-1"].flavor_id == data.openstack_compute_flavor_v2.reserved["99999999-2222-3333-4444-555555555555"].id
    error_message = "The new lease's flavor is used."
  }
}

run "existing_key_pair_and_no_volume" {
  variables {
    public_key     = ""
    key_pair_name  = "my-existing-key"
    data_volume_id = ""
  }

  assert {
    condition     = length(openstack_compute_keypair_v2.this) == 0 && openstack_compute_instance_v2.this["demo-services"].key_pair == "my-existing-key"
    error_message = "An existing key pair is used as is, none is made."
  }

  assert {
    condition     = length(openstack_compute_volume_attach_v2.data) == 0
    error_message = "No volume, no attachment."
  }
}
