#!/bin/bash
# Exits 0 when the app answers GET with 200 for every path given; bash's /dev/tcp, as the image
# has no curl or wget.
for path in "$@"; do
  exec 3<>/dev/tcp/127.0.0.1/3000 || exit 1
  printf 'GET %s HTTP/1.0\r\n\r\n' "$path" >&3
  head -n1 <&3 | grep -q ' 200 ' || exit 1
  exec 3<&-
done
