FROM alpine
COPY --link=false --chown="app user" a /b
