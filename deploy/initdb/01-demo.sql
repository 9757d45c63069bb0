-- The demo table whose inserts docker-compose.yml's nodes deliver
-- (trigger signup-welcome in deploy/triggerd.yaml). The postgres image
-- runs this file once, when it creates its database.
CREATE TABLE signups (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email      text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
