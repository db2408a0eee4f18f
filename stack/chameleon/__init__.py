"""`CLOUD=chameleon`: a GPU lease with python-chi, the hosts with Terraform (`infra/`), then the
same Ansible path as every target. Facts about Chameleon live in `sites.py`."""
