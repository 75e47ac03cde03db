FROM alpine
FROM 0
COPY --from=0 / /
