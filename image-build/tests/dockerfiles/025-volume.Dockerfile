FROM alpine
VOLUME /data
VOLUME ["/a", "/b"]
VOLUME /c /d
