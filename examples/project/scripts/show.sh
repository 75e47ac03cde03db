#!/bin/sh
# The final image's command: who runs it, and the report made at build time.
echo "$GREETING (user $(id -un), uid $(id -u), in $(pwd))"
echo
cat "$REPORT"
