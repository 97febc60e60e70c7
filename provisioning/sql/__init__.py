"""SQL migrations of the provisioning schema: device identities and service accounts."""
