ARG A
ARG B=2
FROM alpine
