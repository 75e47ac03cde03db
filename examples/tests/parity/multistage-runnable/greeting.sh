#!/bin/sh
echo "$GREETING"
cat "$@"
