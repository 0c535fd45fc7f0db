#!/usr/bin/env bash
# Makes the local base image for offline image builds (no image registry is reachable): the files of the host's
# own installed Debian packages that node 20 (with npm and its headers), g++, make and python3 need, plus a shell,
# packed with tar and loaded with `docker import`. Takes well under a minute; skipped when the image is current.
# Usage: scripts/docker-base-image.sh [--no-toolchain] [REPOSITORY]   prints the image reference (REPOSITORY:KEY) on stdout.
#   --no-toolchain: without g++, make and python3 (a consumer's slim machine: the install tests prove that the published
#   package needs none of them); its default REPOSITORY is ipc-ckpt-local/node-runtime-base.
# The tag KEY is a digest of the chosen packages (names, versions) and the packed paths: a host upgrade makes a new base.
set -euo pipefail

# What the image must run: the tool (node; nsenter and sh for its rollback guardian), its build (npm, node-gyp:
# python3, make, g++) and shell scripts, as the official node images have them.
RUNTIME_PACKAGES=(nodejs base-files base-passwd bash dash coreutils debianutils diffutils util-linux
  findutils grep sed tar gzip libc-bin ca-certificates)
if [ "${1:-}" = --no-toolchain ]; then
  shift
  readonly REPOSITORY=${1:-ipc-ckpt-local/node-runtime-base}
  readonly ROOT_PACKAGES=("${RUNTIME_PACKAGES[@]}")
else
  readonly REPOSITORY=${1:-ipc-ckpt-local/node-build-base}
  readonly ROOT_PACKAGES=("${RUNTIME_PACKAGES[@]}" g++ make python3)
fi

log() { echo "docker-base-image: $*" >&2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Prints the dependency closure (Depends + Pre-Depends over installed packages) as "name version" lines,
# then writes the file list (canonical paths, one per line) to $work/files.
python3 - "$work" "${ROOT_PACKAGES[@]}" >"$work/packages" <<'PY'
import os, re, sys

work, roots = sys.argv[1], sys.argv[2:]
installed, provides = {}, {}
with open('/var/lib/dpkg/status', encoding='utf-8') as status:
    for stanza in status.read().split('\n\n'):
        fields, last = {}, None
        for line in stanza.splitlines():
            if line[:1] in (' ', '\t') and last:
                fields[last] += ' ' + line.strip()
            elif ':' in line:
                last, value = line.split(':', 1)
                fields[last] = value.strip()
        if 'Package' not in fields or not fields.get('Status', '').endswith(' installed'):
            continue
        installed[fields['Package']] = fields
        for virtual in fields.get('Provides', '').split(','):
            name = re.sub(r'\(.*?\)', '', virtual).strip()
            if name:
                provides.setdefault(name, []).append(fields['Package'])

def resolve(name):
    name = name.split(':')[0]
    if name in installed:
        return name
    return (provides.get(name) or [None])[0]

chosen, pending = set(), list(roots)
while pending:
    package = resolve(pending.pop())
    if package is None or package in chosen:
        continue
    chosen.add(package)
    fields = installed[package]
    for relation in (fields.get('Depends', '') + ',' + fields.get('Pre-Depends', '')).split(','):
        # An alternative "a | b": the first one that is installed (or provided) here.
        for alternative in relation.split('|'):
            name = re.sub(r'\(.*?\)', '', alternative).strip()
            if name and resolve(name):
                pending.append(name)
                break

missing = [root for root in roots if resolve(root) is None]
if missing:
    sys.exit('docker-base-image: not installed on this host: ' + ' '.join(missing))

paths = set()
for package in sorted(chosen):
    arch = installed[package].get('Architecture', 'all')
    for list_name in (f'{package}:{arch}.list', f'{package}.list'):
        list_path = os.path.join('/var/lib/dpkg/info', list_name)
        if os.path.exists(list_path):
            with open(list_path, encoding='utf-8') as listing:
                for path in listing.read().splitlines():
                    # Merged /usr: /bin/x is stored as usr/bin/x, the /bin symlink itself is added below.
                    canonical = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
                    if os.path.lexists(canonical) and canonical != '/.':
                        paths.add(canonical)
            break
# Files that maintainer scripts generate rather than ship.
for extra in ['/bin', '/sbin', '/lib', '/lib64', '/etc/passwd', '/etc/group', '/etc/shadow', '/etc/gshadow',
              '/etc/ld.so.cache', '/etc/ssl/certs', '/etc/alternatives', '/usr/etc/npmrc']:
    if os.path.lexists(extra):
        paths.add(extra)
        if os.path.isdir(extra) and not os.path.islink(extra):
            for entry in os.listdir(extra):
                paths.add(os.path.join(extra, entry))
# npm is often upgraded in place (npm install -g npm), so its files are no longer those nodejs shipped.
for tree in ['/usr/lib/node_modules/npm', '/usr/include/node']:
    for directory, subdirectories, files in os.walk(tree):
        paths.add(directory)
        paths.update(os.path.join(directory, name) for name in subdirectories + files)
with open(os.path.join(work, 'files'), 'w', encoding='utf-8') as out:
    for path in sorted(paths):
        out.write(path.lstrip('/') + '\n')
for package in sorted(chosen):
    print(package, installed[package].get('Version', ''))
PY

key=$(cat "$work/packages" "$work/files" | sha256sum | cut -c1-16)
readonly image=$REPOSITORY:$key
if docker image inspect "$image" >/dev/null 2>&1; then
  log "$image is current ($(wc -l <"$work/packages") packages)"
  echo "$image"
  exit 0
fi
log "packing $(wc -l <"$work/files") paths of $(wc -l <"$work/packages") host packages into $image"
# Directories are listed one by one (--no-recursion), so nothing outside the packages slips in.
tar -C / --no-recursion --numeric-owner -cf - -T "$work/files" |
  docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' \
    --message "ipc-ckpt local base: $(tr '\n' ' ' <"$work/packages" | cut -c1-200)" \
    - "$image" >/dev/null
docker tag "$image" "$REPOSITORY:latest"
# Older bases of this repository are dead weight (about half a gigabyte each).
docker images --format '{{.Repository}}:{{.Tag}}' "$REPOSITORY" | grep -v -e ":$key\$" -e ':latest$' |
  xargs -r docker rmi >/dev/null 2>&1 || true
log "imported $image ($(docker image inspect -f '{{.Size}}' "$image") bytes)"
echo "$image"
