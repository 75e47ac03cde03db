# Shared by bench/build.sh and bench/build-cache.sh (sourced): the
# generated context files, part 1's ten-step bench Dockerfile, and the
# busybox-static root filesystem of the base image.

gen() { # gen DIR FILES: FILES small text files in 10 directories, the same bytes every time
  python3 - "$@" <<'PY'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rnd = random.Random(42)
words = ["alpha", "beta", "gamma", "delta", "layer", "image", "build", "cache", "step", "copy"]
for i in range(n):
    d = os.path.join(root, f"d{i % 10}")
    os.makedirs(d, exist_ok=True)
    lines = [" ".join(rnd.choice(words) for _ in range(8)) for _ in range(rnd.randint(1, 40))]
    with open(os.path.join(d, f"f{i:04d}.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
PY
}

ten_dockerfile() { # ten_dockerfile FILE: the ten-step bench Dockerfile
  cat > "$1" <<'EOF'
FROM bench/busybox:latest
ENV APP=/app MODE=bench
RUN mkdir -p /app/bin && echo built > /app/built.txt
COPY files/ /app/files/
WORKDIR /app
COPY config.txt /app/config.txt
RUN ls files > list.txt
LABEL bench=build
EXPOSE 8080
CMD ["cat", "/app/list.txt"]
EOF
}

base_rootfs() { # base_rootfs DIR: busybox-static with its applets, passwd and group
  local ROOTFS=$1
  mkdir -p "$ROOTFS"/{bin,etc,tmp,root}
  cp /bin/busybox "$ROOTFS/bin/busybox"
  for a in sh cat echo env id ls mkdir rm stat test true; do ln -s busybox "$ROOTFS/bin/$a"; done
  printf 'root:x:0:0:root:/root:/bin/sh\n' > "$ROOTFS/etc/passwd"
  printf 'root:x:0:\n' > "$ROOTFS/etc/group"
}
