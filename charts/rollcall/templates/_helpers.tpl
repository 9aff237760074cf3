{{/*
Names, labels and the computed values shared by the templates.
*/}}

{{/* Chart name, or nameOverride. */}}
{{- define "rollcall.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Object name prefix: fullnameOverride, or "<release>-<name>" unless the release already contains the name. */}}
{{- define "rollcall.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "<name>-<version>" for the helm.sh/chart label. */}}
{{- define "rollcall.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels of one component: (dict "ctx" $ "component" "server"). */}}
{{- define "rollcall.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rollcall.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* All labels of one component's objects: (dict "ctx" $ "component" "server"). */}}
{{- define "rollcall.labels" -}}
helm.sh/chart: {{ include "rollcall.chart" .ctx }}
{{ include "rollcall.selectorLabels" . }}
app.kubernetes.io/part-of: rollcall
{{- with .ctx.Chart.AppVersion }}
app.kubernetes.io/version: {{ . | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Image reference from (dict "image" <values> "defaultTag" <tag>): digest wins over tag. */}}
{{- define "rollcall.image" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (toString (default .defaultTag .image.tag)) -}}
{{- end -}}
{{- end -}}

{{/* The server image. */}}
{{- define "rollcall.serverImage" -}}
{{- include "rollcall.image" (dict "image" .Values.image "defaultTag" .Chart.AppVersion) -}}
{{- end -}}

{{/* The operator image: its own when operator.image.repository is set, else the server's. */}}
{{- define "rollcall.operatorImage" -}}
{{- if .Values.operator.image.repository -}}
{{- include "rollcall.image" (dict "image" .Values.operator.image "defaultTag" .Chart.AppVersion) -}}
{{- else -}}
{{- include "rollcall.serverImage" . -}}
{{- end -}}
{{- end -}}

{{/* ServiceAccount of the server pods. */}}
{{- define "rollcall.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "rollcall.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* ServiceAccount of the operator pods. */}}
{{- define "rollcall.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (printf "%s-operator" (include "rollcall.fullname" .)) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding ROLLCALL_HTTP_API_KEY and ROLLCALL_CLIENT_TOKEN_HMAC_SECRET_KEY. */}}
{{- define "rollcall.secretName" -}}
{{- default (printf "%s-secret" (include "rollcall.fullname" .)) .Values.existingSecret -}}
{{- end -}}

{{/* The ConfigMap the operator writes and the server hot-reloads. */}}
{{- define "rollcall.namespacesConfigMapName" -}}
{{- printf "%s-namespaces" (include "rollcall.fullname" .) -}}
{{- end -}}

{{/* Namespace the operator watches: "all", or a namespace name. */}}
{{- define "rollcall.operator.watchNamespace" -}}
{{- default .Release.Namespace .Values.operator.watchNamespace -}}
{{- end -}}

{{/* The operator's leader-election Lease (in the release namespace). */}}
{{- define "rollcall.operator.leaseName" -}}
{{- printf "%s-operator" (include "rollcall.fullname" .) -}}
{{- end -}}

{{/* Base name of the bundled NATS objects. */}}
{{- define "rollcall.nats.fullname" -}}
{{- printf "%s-nats" (include "rollcall.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* "true" when the chart renders its own NATS (enabled and no external url). */}}
{{- define "rollcall.nats.bundled" -}}
{{- if and .Values.nats.enabled (not .Values.nats.url) -}}true{{- end -}}
{{- end -}}

{{/* NATS URL the server uses: nats.url, else the bundled client Service, else "" (memory engine). */}}
{{- define "rollcall.nats.url" -}}
{{- if .Values.nats.url -}}
{{- .Values.nats.url -}}
{{- else if .Values.nats.enabled -}}
{{- printf "nats://%s.%s.svc:%d" (include "rollcall.nats.fullname" .) .Release.Namespace (int .Values.nats.port) -}}
{{- end -}}
{{- end -}}

{{/*
The server config file: chart defaults with values.config merged over them.
*/}}
{{- define "rollcall.serverConfig" -}}
{{- $engine := dict "type" "memory" -}}
{{- $url := include "rollcall.nats.url" . -}}
{{- if $url -}}
{{- $engine = dict "type" "nats" "nats" (dict "url" $url "prefix" (include "rollcall.fullname" .)) -}}
{{- end -}}
{{- $defaults := dict
  "http_server" (dict "address" "0.0.0.0" "port" 8000)
  "channel" (dict "namespaces_file" "/etc/rollcall/namespaces/namespaces.yaml")
  "engine" $engine
  "shutdown" (dict "timeout" "30s")
  "log" (dict "level" "info" "format" "json") -}}
{{- toYaml (mergeOverwrite $defaults (deepCopy (default (dict) .Values.config))) -}}
{{- end -}}

{{/* Engine type after the merge: "memory" or "nats". */}}
{{- define "rollcall.engineType" -}}
{{- $cfg := include "rollcall.serverConfig" . | fromYaml -}}
{{- (($cfg.engine | default dict).type | default "memory") -}}
{{- end -}}

{{/* Server replicas: replicaCount, else 3 with NATS and 1 with the memory engine. */}}
{{- define "rollcall.replicas" -}}
{{- if kindIs "invalid" .Values.replicaCount -}}
{{- if eq (include "rollcall.engineType" .) "memory" -}}1{{- else -}}3{{- end -}}
{{- else -}}
{{- int .Values.replicaCount -}}
{{- end -}}
{{- end -}}

{{/* The HTTP port the server listens on (http_server.port of the merged config). */}}
{{- define "rollcall.httpPort" -}}
{{- $cfg := include "rollcall.serverConfig" . | fromYaml -}}
{{- int (($cfg.http_server | default dict).port | default 8000) -}}
{{- end -}}

{{/*
Whole seconds (rounded up) of a duration string such as "30s", "1m30s", "500ms", "1h".
*/}}
{{- define "rollcall.durationSeconds" -}}
{{- $d := toString . -}}
{{- if not (regexMatch "^([0-9]+(ms|s|m|h))+$" $d) -}}
{{- fail (printf "config.shutdown.timeout %q is not a duration such as \"30s\", \"1m\" or \"500ms\"" $d) -}}
{{- end -}}
{{- $ms := 0 -}}
{{- range regexFindAll "[0-9]+(ms|s|m|h)" $d -1 -}}
{{- $n := regexFind "^[0-9]+" . -}}
{{- $unit := trimPrefix $n . -}}
{{- $factor := get (dict "ms" 1 "s" 1000 "m" 60000 "h" 3600000) $unit -}}
{{- $ms = add $ms (mul (atoi $n) $factor) -}}
{{- end -}}
{{- div (add $ms 999) 1000 -}}
{{- end -}}

{{/*
Checks across values that the schema cannot express; fails the render with the fix to make.
*/}}
{{- define "rollcall.validate" -}}
{{- $cfg := include "rollcall.serverConfig" . | fromYaml -}}
{{- $api := $cfg.http_api | default dict -}}
{{- if $api.key -}}
{{- fail "config.http_api.key would land in a ConfigMap: set secret.apiKey or existingSecret instead" -}}
{{- end -}}
{{- $token := (($cfg.client | default dict).token | default dict) -}}
{{- if $token.hmac_secret_key -}}
{{- fail "config.client.token.hmac_secret_key would land in a ConfigMap: set secret.tokenHmacSecretKey or existingSecret instead" -}}
{{- end -}}
{{- $userEngine := (default (dict) .Values.config).engine | default dict -}}
{{- $chartEngine := ternary "nats" "memory" (ne (include "rollcall.nats.url" .) "") -}}
{{- if and $userEngine.type (ne (toString $userEngine.type) $chartEngine) -}}
{{- fail (printf "config.engine.type %q contradicts the NATS values (engine %q): choose the engine with nats.enabled / nats.url" (toString $userEngine.type) $chartEngine) -}}
{{- end -}}
{{- if ($userEngine.nats | default dict).url -}}
{{- fail "config.engine.nats.url: set nats.url instead (or ROLLCALL_ENGINE_NATS_URL in existingSecret for a URL with credentials)" -}}
{{- end -}}
{{- $engine := include "rollcall.engineType" . -}}
{{- if eq $engine "memory" -}}
{{- if .Values.autoscaling.enabled -}}
{{- fail "autoscaling.enabled needs a NATS engine: the memory engine keeps presence inside one pod (set nats.enabled or nats.url)" -}}
{{- end -}}
{{- if gt (int (include "rollcall.replicas" .)) 1 -}}
{{- fail "replicaCount > 1 needs a NATS engine: the memory engine keeps presence inside one pod (set nats.enabled or nats.url, or replicaCount: 1)" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" -}}
{{- end -}}
{{- if and .Values.podDisruptionBudget.enabled (not (kindIs "invalid" .Values.podDisruptionBudget.minAvailable)) (not (kindIs "invalid" .Values.podDisruptionBudget.maxUnavailable)) -}}
{{- fail "podDisruptionBudget: set either minAvailable or maxUnavailable (null the other)" -}}
{{- end -}}
{{- $shutdown := include "rollcall.durationSeconds" (($cfg.shutdown | default dict).timeout | default "30s") | int -}}
{{- $needed := add $shutdown (int .Values.preStopSleepSeconds) -}}
{{- if le (int .Values.terminationGracePeriodSeconds) $needed -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed preStopSleepSeconds + config.shutdown.timeout (%d s), or pods are killed before they close their clients" (int .Values.terminationGracePeriodSeconds) $needed) -}}
{{- end -}}
{{- end -}}

{{/* imagePullSecrets block of a pod spec. */}}
{{- define "rollcall.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . | quote }}
{{- end }}
{{- end }}
{{- end -}}
