"""`CLOUD=local`: every service on this machine, configured by Ansible with connection `local`."""
