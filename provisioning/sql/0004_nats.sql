-- A NATS cluster reads bcrypt password hashes, not Mosquitto's PBKDF2 ones: each identity's
-- bcrypt hash is made from its password when it is registered or rotated (NULL for those
-- made before: rotate them to give them a NATS identity).
ALTER TABLE provisioning.device ADD COLUMN nats_password_hash text CHECK (nats_password_hash LIKE '$2%');
ALTER TABLE provisioning.service_account ADD COLUMN nats_password_hash text CHECK (nats_password_hash LIKE '$2%');
