"""The release board in the browser: `shepherd dashboard` and `kubectl release dashboard`.

Every read and write goes to the API server with the user's own credentials, so RBAC and the admission
policies apply as they do for kubectl. It binds loopback unless told otherwise, and refuses every write
unless started with --allow-actions.
"""
