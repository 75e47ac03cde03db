FROM alpine
RUN ["/bin/sh", "-c", "echo hi"]
