ARG BASE=busybox
ARG SRC_STAGE=build
FROM ${BASE} AS Tools
ENV TOOL_DIR=/opt/tools
RUN mkdir -p $TOOL_DIR

FROM tools AS build
ARG VERSION=1.0
ENV OUT=$TOOL_DIR/out-${VERSION}
COPY --chown=${USER:-1000} src/ $OUT/
RUN make -C $OUT

FROM scratch AS unused
COPY --from=0 /etc /etc

FROM ${BASE}
ARG SRC_STAGE
ARG GREETING
LABEL greeting="${GREETING:-hello}" stage=$SRC_STAGE
COPY --from=$SRC_STAGE /opt/tools/out-1.0 /srv
WORKDIR /srv
CMD ["./serve"]
