# The services host's durable data, in a state of its own: destroying infra/ (`make down`)
# only detaches it; `make down PURGE=1` destroys this state too.
resource "openstack_blockstorage_volume_v3" "this" {
  name        = "${var.stack_name}-data"
  description = "Data of stack ${var.stack_name}: PostgreSQL and the object store"
  size        = var.size_gb
  volume_type = var.volume_type

  metadata = {
    stack = var.stack_name
    role  = "data"
  }
}
