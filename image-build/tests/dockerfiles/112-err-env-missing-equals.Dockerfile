FROM alpine
ENV a=b c
