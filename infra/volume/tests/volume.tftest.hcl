mock_provider "openstack" {}

variables {
  stack_name = "demo"
  cloud      = "chameleon-kvm-tacc"
}

run "named_sized_and_typed" {
  assert {
    condition     = openstack_blockstorage_volume_v3.this.name == "demo-data" && openstack_blockstorage_volume_v3.this.metadata.stack == "demo"
    error_message = "The volume is named and labelled after the stack."
  }

  assert {
    condition     = openstack_blockstorage_volume_v3.this.size == 100 && openstack_blockstorage_volume_v3.this.volume_type == "ceph-ssd"
    error_message = "100 GiB of ceph-ssd by default."
  }

  assert {
    condition     = output.volume_id == openstack_blockstorage_volume_v3.this.id
    error_message = "volume_id is the volume's id."
  }
}

run "unknown_volume_type" {
  command = plan
  variables {
    volume_type = "gp2"
  }
  expect_failures = [var.volume_type]
}

run "zero_size" {
  command = plan
  variables {
    size_gb = 0
  }
  expect_failures = [var.size_gb]
}
