FROM alpine
RUN <<A cat /dev/stdin && <<B cat
first
A
second
B
