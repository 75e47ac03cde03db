FROM alpine AS build
RUN true
FROM alpine
RUN --mount=target=/src --mount=type=bind,from=build,source=/out,target=/in,rw make
RUN --mount=type=cache,target=/var/cache/apt,id=apt,sharing=locked,mode=0700,uid=100,gid=100 --mount="type=cache,target=/root/.cache,from=build,source=seed,ro" apt-get update
RUN --mount=type=tmpfs,target=/scratch,size=64m --mount=type=secret,id=npmrc,target=/root/.npmrc,required,mode=0440 --mount=type=secret,id=tok,env=TOKEN npm ci
RUN --network=host --security=insecure true
