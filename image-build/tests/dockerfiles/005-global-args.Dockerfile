ARG BASE=alpine
ARG TAG
ARG A=1 B=2
FROM ${BASE}:${TAG:-latest}
