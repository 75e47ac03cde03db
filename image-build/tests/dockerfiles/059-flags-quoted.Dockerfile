FROM alpine
COPY --chown='a b' --from="st" x y
