FROM alpine
ONBUILD COPY . /app
ONBUILD RUN --network=none make -C /app
ONBUILD ENV A=1
