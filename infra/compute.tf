# The key pair holds only the public key; the private key never reaches Terraform or its state.
resource "openstack_compute_keypair_v2" "this" {
  count = var.public_key != "" ? 1 : 0

  name       = "${var.stack_name}-key"
  public_key = trimspace(var.public_key)
}

# KVM: each reservation brings its own flavor, named reservation:<reservation id>, private to
# the project while the lease is ACTIVE and deleted at its end (ChameleonCloud/blazar
# instance_plugin.py on_start/on_end): looked up only while the lease is active.
data "openstack_compute_flavor_v2" "reserved" {
  for_each = local.is_kvm && var.reservations_active ? toset([for host in values(local.hosts) : host.reservation_id]) : toset([])

  name = "reservation:${each.key}"
}

# A new lease means new reservation ids. Changing flavor_id would resize the instance in place
# (and a bare-metal hint would be ignored), so the instances are replaced instead.
resource "terraform_data" "reservation" {
  for_each = local.hosts

  input = each.value.reservation_id
}

resource "openstack_compute_instance_v2" "this" {
  for_each = local.hosts

  name        = each.key
  image_name  = var.image
  flavor_id   = local.is_kvm && var.reservations_active ? data.openstack_compute_flavor_v2.reserved[each.value.reservation_id].id : null
  flavor_name = local.is_kvm ? null : "baremetal"
  key_pair    = var.public_key != "" ? openstack_compute_keypair_v2.this[0].name : var.key_pair_name
  tags        = [local.stack_tag, "role=${each.value.role}"]

  metadata = {
    stack = var.stack_name
    role  = each.value.role
  }

  network {
    port = openstack_networking_port_v2.this[each.key].id
  }

  # Bare metal: the physical:host reservation is chosen by the scheduler hint.
  dynamic "scheduler_hints" {
    for_each = local.is_kvm ? [] : [each.value.reservation_id]

    content {
      additional_properties = {
        reservation = scheduler_hints.value
      }
    }
  }

  lifecycle {
    replace_triggered_by = [terraform_data.reservation[each.key]]
  }
}

# The services host's data volume (PostgreSQL, object store), from infra/volume's state. Only
# the attachment is managed here: `make down` detaches it and the volume stays.
resource "openstack_compute_volume_attach_v2" "data" {
  count = var.data_volume_id != "" ? 1 : 0

  instance_id = openstack_compute_instance_v2.this[local.gateway_name].id
  volume_id   = var.data_volume_id
}
