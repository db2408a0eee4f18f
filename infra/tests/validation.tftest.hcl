# Variables a user can get wrong are refused before anything is planned.

mock_provider "openstack" {}

variables {
  stack_name              = "demo"
  cloud                   = "chameleon-kvm-tacc"
  site                    = "KVM@TACC"
  gpu_count               = 1
  gpu_reservation_id      = "11111111-2222-3333-4444-555555555555"
  services_reservation_id = "66666666-7777-8888-9999-000000000000"
  ssh_allowed_cidr        = "203.0.113.7/32"
  public_key              = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGZha2VrZXlmb3J0ZXN0c29ubHk demo@stack"
}

run "unknown_site" {
  command = plan
  variables {
    site = "KVM@UC"
  }
  expect_failures = [var.site]
}

run "ssh_from_anywhere_without_saying_so" {
  command = plan
  variables {
    ssh_allowed_cidr = "0.0.0.0/0"
  }
  expect_failures = [var.ssh_allowed_cidr]
}

run "ssh_from_anywhere_when_said_so" {
  command = plan
  variables {
    ssh_allowed_cidr        = "0.0.0.0/0"
    allow_ssh_from_anywhere = true
  }
  assert {
    condition     = openstack_networking_secgroup_rule_v2.ssh[0].remote_ip_prefix == "0.0.0.0/0"
    error_message = "An explicit allow_ssh_from_anywhere opens SSH to the world."
  }
}

run "zero_gpu_nodes" {
  command = plan
  variables {
    gpu_count = 0
  }
  expect_failures = [var.gpu_count]
}

run "a_lease_name_is_not_a_reservation_id" {
  command = plan
  variables {
    gpu_reservation_id = "demo-lease"
  }
  expect_failures = [var.gpu_reservation_id]
}

run "both_key_sources" {
  command = plan
  variables {
    key_pair_name = "mine"
  }
  expect_failures = [var.public_key]
}

run "a_private_key_is_refused" {
  command = plan
  variables {
    public_key = "-----BEGIN PRIVATE KEY-----" # a private key (PKCS#8 header) is never a public one
  }
  expect_failures = [var.public_key]
}

run "bad_stack_name" {
  command = plan
  variables {
    stack_name = "Demo_1"
  }
  expect_failures = [var.stack_name]
}

run "floating_ip_must_be_an_address" {
  command = plan
  variables {
    site                = "CHI@UC"
    floating_ip_address = "public"
  }
  expect_failures = [var.floating_ip_address]
}

run "kvm_takes_no_reserved_floating_ip" {
  command = plan
  variables {
    floating_ip_address = "129.114.108.20"
  }
  expect_failures = [var.floating_ip_address]
}

run "bare_metal_needs_its_reserved_floating_ip" {
  command = plan
  variables {
    site = "CHI@UC"
  }
  expect_failures = [var.floating_ip_address]
}
