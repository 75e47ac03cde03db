FROM alpine
CMD echo hello
CMD ["echo", "hello world"]
CMD []
