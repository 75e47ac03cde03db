FROM alpine AS one
RUN true
FROM one AS two
COPY --from=one /a /b
FROM scratch
COPY --from=0 /x /y
