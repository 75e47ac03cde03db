FROM alpine
  WORKDIR
