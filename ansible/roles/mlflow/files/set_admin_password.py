"""Make the MLflow basic-auth admin's password equal to the one in the stack's secrets.

MLflow sets the admin password only when it creates the user store. When the stack state is
re-created while the database is kept, the two disagree; this brings the database in line.
Reads the auth config from MLFLOW_AUTH_CONFIG_PATH and the password from stdin.
"""

import sys

from mlflow.server.auth.config import read_auth_config
from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

config = read_auth_config()
password = sys.stdin.read().strip()
store = SqlAlchemyStore()
store.init_db(config.database_uri)
if store.has_user(config.admin_username):
    store.update_user(config.admin_username, password=password, is_admin=True)
else:
    store.create_user(config.admin_username, password, is_admin=True)
print(f"admin password set for {config.admin_username}")
