output "volume_id" {
  description = "Id of the data volume: infra/'s data_volume_id."
  value       = openstack_blockstorage_volume_v3.this.id
}
