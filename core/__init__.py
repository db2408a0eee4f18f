"""The floor both packages stand on: errors a user can cause, repository paths, and the typed
state-folder contract (the stack record and endpoints file, the services and their ports).

`stack/` writes the state folder and `training/` reads it, both only through this package;
neither imports the other."""
