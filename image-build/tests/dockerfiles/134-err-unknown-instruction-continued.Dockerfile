FROM alpine
NOPE \
  x
