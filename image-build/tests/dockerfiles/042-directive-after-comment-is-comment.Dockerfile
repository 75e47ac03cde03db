# hello
# syntax=x
FROM alpine
