#!/bin/sh
# Run in a chroot of the image at build time: a PostgreSQL cluster holding the app's database
# (user and database `todo`), its schema and seed data, and the user the app runs as.
set -eu
PG=/usr/lib/postgresql/15/bin
DATA=/var/lib/postgresql/data

# the package's own cluster is not used: ours lives in $DATA and the warm-up starts it with pg_ctl
pg_dropcluster 15 main || true
install -d -o postgres -g postgres "$DATA" /run/postgresql
su postgres -s /bin/sh -c "$PG/initdb --no-sync -D $DATA -U postgres --auth-host=scram-sha-256 --auth-local=trust"
cat >>"$DATA/postgresql.conf" <<'CONF'
listen_addresses = '*'
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 32MB
dynamic_shared_memory_type = mmap
CONF
echo 'host all all 0.0.0.0/0 scram-sha-256' >>"$DATA/pg_hba.conf"

# SQL on stdin, statements ended by a blank line (-j), run in database $1; postgres --single
# reports a failed statement in its output only, not in its exit status
single_user() {
  su postgres -s /bin/sh -c "$PG/postgres --single -j -D $DATA $1" >/tmp/single-user.log 2>&1
  if grep -q ERROR /tmp/single-user.log; then
    cat /tmp/single-user.log >&2
    exit 1
  fi
}
printf "CREATE USER todo PASSWORD 'todo';\n\nCREATE DATABASE todo OWNER todo;\n\n" | single_user postgres
single_user todo </opt/todo-app/schema.sql

useradd --system --no-create-home --shell /usr/sbin/nologin todo
