FROM alpine
ONBUILD COPY --from=builder /a /b
