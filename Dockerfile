# A small image: a static xdshard binary on an empty base.
# docker build -t xdshard . (needs a Docker engine; CI does not build it)
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/xdshard ./cmd/xdshard

FROM scratch
COPY --from=build /out/xdshard /xdshard
USER 65532:65532
EXPOSE 15010 15014
ENTRYPOINT ["/xdshard", "serve"]
