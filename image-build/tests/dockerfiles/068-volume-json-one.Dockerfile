FROM alpine
VOLUME ["/var/log"]
