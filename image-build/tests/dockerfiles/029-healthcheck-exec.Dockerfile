FROM alpine
HEALTHCHECK cmd ["/check", "--now"]
