-- Argo CD health check for shepherd.dev/Release.
--
-- Install it as `resource.customizations.health.shepherd.dev_Release` in the argocd-cm ConfigMap
-- (examples/gitops/argocd/argocd-cm.yaml). It reads only what the operator writes to status:
--
--   no status, or status.observedGeneration behind metadata.generation    Progressing
--   a Stalled=True condition (InvalidSpec, ...), phase RolledBack or Failed  Degraded
--   phase Paused, or phase Pending held by spec.paused                      Suspended
--   phase Succeeded with Ready=True                                         Healthy
--   anything else (Pending, Gating, Progressing, Promoting, Baking,         Progressing
--   Migrating, RollingBack)
--
-- Argo CD opens only the base, table and package libraries (and a reduced os) for health checks unless
-- resource.customizations.useOpenLibs is set, so this script uses nothing from string or math.

local function condition(status, kind)
  if status.conditions == nil then
    return nil
  end
  for _, candidate in ipairs(status.conditions) do
    if candidate.type == kind then
      return candidate
    end
  end
  return nil
end

local function holds(status, kind)
  local found = condition(status, kind)
  return found ~= nil and found.status == "True"
end

local function health(state, message)
  return { status = state, message = message or "" }
end

local function observed(release)
  local status = release.status
  if status == nil or status.observedGeneration == nil then
    return false
  end
  -- A live object always has a generation; without one there is nothing to be behind.
  local generation = release.metadata.generation
  return generation == nil or status.observedGeneration == generation
end

local function stalled_message(status)
  local stalled = condition(status, "Stalled")
  return (stalled.reason or "Stalled") .. ": " .. (stalled.message or status.message or "")
end

local function held_by_spec(release)
  return release.spec ~= nil and release.spec.paused == true
end

local function assess(release)
  if not observed(release) then
    return health("Progressing", "waiting for the operator to observe the new spec")
  end
  local status = release.status
  local phase = status.phase
  -- Stalled comes first: an InvalidSpec keeps the phase of the last valid spec, Succeeded included.
  if holds(status, "Stalled") then
    return health("Degraded", stalled_message(status))
  end
  if phase == "RolledBack" or phase == "Failed" then
    return health("Degraded", status.message)
  end
  if phase == "Paused" or (phase == "Pending" and held_by_spec(release)) then
    return health("Suspended", status.message)
  end
  if phase == "Succeeded" and holds(status, "Ready") then
    return health("Healthy", status.message)
  end
  return health("Progressing", status.message)
end

return assess(obj)
