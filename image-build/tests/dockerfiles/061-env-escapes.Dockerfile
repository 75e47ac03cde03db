FROM alpine
ENV PATH=/x:$PATH A='single $q' B="dq \"in\""
