FROM alpine:3.19 AS Build
