"""One sample app per stack for the stacks buildpack's tests and bench:
`files(stack, message)` -> {path: content}; each answers `message` on $PORT.
Python and Node declare a real dependency from PyPI and npm (reachable from
the host network here); Go, Rust and Ruby use their standard libraries (the
Go proxy and crates.io are not reachable, rubygems is not needed)."""

from __future__ import annotations

import json

# The stack images built by .ci/images (Debian's packages), mapped by role.
BASE_IMAGES = {
    "python": "gitd-ci/stack-python:latest",
    "node": "gitd-ci/stack-node:latest",
    "go": "gitd-ci/stack-go:latest",
    "rust": "gitd-ci/stack-rust:latest",
    "ruby": "gitd-ci/stack-ruby:latest",
    "runtime": "gitd-ci/debian:bookworm",
    "static": "gitd-test/busybox:latest",
}

GITD_TOML = "build_network = \"host\"\n\n[base_images]\n" + "".join(
    f'{role} = "{image}"\n' for role, image in BASE_IMAGES.items())

NPM_LOCK = {
    "name": "sample", "version": "1.0.0", "lockfileVersion": 3, "requires": True,
    "packages": {
        "": {"name": "sample", "version": "1.0.0", "dependencies": {"ms": "^2.1.3"}},
        "node_modules/ms": {
            "version": "2.1.3",
            "resolved": "https://registry.npmjs.org/ms/-/ms-2.1.3.tgz",
            "integrity": "sha512-6FlzubTLZG3J2a/NVCAleEhjzq5oxgHyaCU9yYXvcLsvoVaHJq/s5xXI6/"
                         "XXP6tz7R9xAOtHnSO/tXtF3WRTlA==",
            "license": "MIT"}}}


def python(message: str) -> dict:
    return {
        "requirements.txt": "gunicorn==23.0.0\nsix==1.17.0\n",
        "app.py": (
            "import os\nimport six\n\n\n"
            "def app(environ, start_response):\n"
            f"    body = ({message!r} + ' uid=%d six=%s\\n' % (os.getuid(), six.__version__)).encode()\n"
            "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
            "    return [body]\n"),
    }


def node(message: str) -> dict:
    return {
        "package.json": json.dumps({
            "name": "sample", "version": "1.0.0", "scripts": {"start": "node server.js"},
            "dependencies": {"ms": "^2.1.3"}}, indent=2) + "\n",
        "package-lock.json": json.dumps(NPM_LOCK, indent=2) + "\n",
        "server.js": (
            "const http = require('http');\nconst ms = require('ms');\n"
            "http.createServer((req, res) => {\n"
            f"  res.end({json.dumps(message)} + ' uid=' + process.getuid() + ' ms=' + ms(60000) + '\\n');\n"
            "}).listen(process.env.PORT || 5000);\n"),
    }


def go(message: str) -> dict:
    return {
        "go.mod": "module example.com/sample\n\ngo 1.19\n",
        "main.go": (
            "package main\n\nimport (\n\t\"fmt\"\n\t\"net/http\"\n\t\"os\"\n)\n\n"
            "func main() {\n"
            "\tport := os.Getenv(\"PORT\")\n"
            "\thttp.HandleFunc(\"/\", func(w http.ResponseWriter, r *http.Request) {\n"
            f"\t\tfmt.Fprintf(w, \"%s uid=%d\\n\", {json.dumps(message)}, os.Getuid())\n"
            "\t})\n"
            "\tpanic(http.ListenAndServe(\":\"+port, nil))\n}\n"),
    }


def rust(message: str) -> dict:
    return {
        "Cargo.toml": '[package]\nname = "sample-web"\nversion = "0.1.0"\nedition = "2021"\n',
        "src/main.rs": (
            "use std::io::{Read, Write};\nuse std::net::TcpListener;\n\n"
            "fn main() {\n"
            "    let port = std::env::var(\"PORT\").unwrap_or_else(|_| \"5000\".into());\n"
            "    let listener = TcpListener::bind(format!(\"0.0.0.0:{}\", port)).unwrap();\n"
            "    for stream in listener.incoming() {\n"
            "        let mut stream = match stream { Ok(s) => s, Err(_) => continue };\n"
            "        let mut buf = [0u8; 4096];\n"
            "        let _ = stream.read(&mut buf);\n"
            f"        let body = format!(\"{{}}\\n\", {json.dumps(message)});\n"
            "        let _ = write!(stream, \"HTTP/1.1 200 OK\\r\\nContent-Length: {}\\r\\n"
            "Connection: close\\r\\n\\r\\n{}\", body.len(), body);\n"
            "    }\n}\n"),
    }


def ruby(message: str) -> dict:
    return {
        "Gemfile": 'source "https://rubygems.org"\n',
        "Gemfile.lock": ("GEM\n  remote: https://rubygems.org/\n  specs:\n\n"
                         "PLATFORMS\n  ruby\n  x86_64-linux\n\nDEPENDENCIES\n\n"
                         "BUNDLED WITH\n   2.3.7\n"),
        "Procfile": "web: ruby app.rb\n",
        "app.rb": (
            "require \"webrick\"  # Debian's ruby-webrick\n"
            "server = WEBrick::HTTPServer.new(Port: Integer(ENV.fetch(\"PORT\", \"5000\")),\n"
            "                                 BindAddress: \"0.0.0.0\", AccessLog: [])\n"
            "server.mount_proc(\"/\") do |_req, res|\n"
            f"  res.body = {json.dumps(message)} + \" uid=#{{Process.uid}}\\n\"\n"
            "end\n"
            "trap(\"TERM\") { server.shutdown }\n"
            "server.start\n"),
    }


def static(message: str) -> dict:
    return {"index.html": f"<!doctype html><p>{message}</p>\n", "style.css": "p { margin: 0 }\n"}


SAMPLES = {"python": python, "node": node, "go": go, "rust": rust, "ruby": ruby, "static": static}


def files(stack: str, message: str) -> dict:
    return SAMPLES[stack](message)
