FROM alpine
COPY *.go go.* /src/
COPY dir/ /dest
COPY file /dest/
